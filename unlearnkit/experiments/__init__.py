"""One module per notebook protocol: models in, tables out."""
