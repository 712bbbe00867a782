"""Backends: one module per runtime behind one interface (:mod:`.base`), listed in one
registry (:mod:`.registry`). Import what you need from those two modules."""
