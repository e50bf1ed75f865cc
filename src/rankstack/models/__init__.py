"""Loading transformer models (a local path or a Hugging Face id) and fast inference backends."""
