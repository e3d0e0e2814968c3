"""Gravity's gang launcher, run on the Ray clusters as a job entrypoint (see launcher.py).

Uploaded as a `py_modules` package and imported there as `gravity_gang`: it must depend on
nothing but the standard library and Ray. `protocol` holds what the executor and the launcher
share; importing this package imports no Ray.
"""
