"""A small shop whose orders are processed by pgqueue jobs (a sample application)."""
