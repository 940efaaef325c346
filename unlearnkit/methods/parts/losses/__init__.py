"""The erasers' objectives as tensor functions, one module per paper."""
