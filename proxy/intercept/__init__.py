"""The wire: parsing and validating OpenAI bodies, identifying programs, reading usage."""
