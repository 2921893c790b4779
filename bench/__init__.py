"""The benchmark: raybatch against a fal_client script, side by side (``python -m bench``)."""
