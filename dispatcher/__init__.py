"""sonoran-dispatcher: a durable, queued dispatcher of in-game 911 calls to Sonoran CAD."""

from dispatcher.errors import InvalidCall, QueueFull, QueueUnavailable
from dispatcher.producer import Producer, enqueue_call
from dispatcher.takeback import UnknownCall, remove_call

__all__ = ["InvalidCall", "Producer", "QueueFull", "QueueUnavailable", "UnknownCall",
           "enqueue_call", "remove_call"]
__version__ = "0.1.0"
