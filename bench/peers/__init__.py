"""The peers the benchmark measures beside this product (the optional bench extra)."""
