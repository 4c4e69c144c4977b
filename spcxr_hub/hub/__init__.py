"""The Hugging Face Hub side: model cards, publishing (export, push), checkpoint conversion and atomic saving."""
