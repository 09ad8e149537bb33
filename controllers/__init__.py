"""Searchers (installed as ``nasforge.controllers``)."""
