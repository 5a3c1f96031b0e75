FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir .
EXPOSE 8000
ENTRYPOINT ["autellix"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
