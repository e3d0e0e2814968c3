"""Fidelity experiments against published results; one command each, printing figures."""
