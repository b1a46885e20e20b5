"""The Models screen: catalog, downloads, local models, Hugging Face cache, Hub settings."""
