"""Tasks: datasets as streams (GSM8K, procedural tasks) and answer checking."""
