"""Stage bodies of `reproduce` that outgrow a few lines, one module each; pipeline.py orders and caches them."""
