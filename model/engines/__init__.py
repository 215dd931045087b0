"""Batched inference engines behind one interface: `load_engine(...).predict(texts)`."""

from model.engines.base import Engine, Prediction
from model.engines.select import load_engine

__all__ = ["Engine", "Prediction", "load_engine"]
