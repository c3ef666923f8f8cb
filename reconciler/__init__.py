"""TeckoChecker: watch OpenAI batches declared in git and trigger Keboola once."""

__version__ = "0.1.0"
