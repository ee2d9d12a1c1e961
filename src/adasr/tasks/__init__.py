"""Tasks: datasets as streams (GSM8K, procedural and proactive families) and answer checking."""
