"""Training loops for the parts of the tiny model. Each submodule ``sdlearn.train.NAME`` has a
``main(argv)`` that ``python -m sdlearn train NAME ...`` calls."""
