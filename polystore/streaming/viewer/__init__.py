"""Live viewers: the control channel, the viewer's end (:class:`ViewerService`), launching one,
and the pipeline's end (:class:`ViewerStreamingBackend`) that napari's and Fiji's backends share.

====================  ===============================================================
module                what
====================  ===============================================================
``control``           requests and replies beside the stream (``ping``, ``load``, ...)
``service``           :class:`ViewerService`: receiver (bound) + control server
``launch``            ``python -m <viewer>`` on demand, free ports, environment settings
``backend``           :class:`ViewerStreamingBackend`
====================  ===============================================================
"""

from __future__ import annotations

from polystore.streaming.endpoints import CONTROL_PORT_OFFSET
from polystore.streaming.payloads import ROI_SET_SUFFIXES
from polystore.streaming.viewer.backend import ViewerStreamingBackend
from polystore.streaming.viewer.control import (
    ControlServer,
    Handler,
    HandlerResult,
    Reply,
    array_from_reply,
    array_reply,
    request,
)
from polystore.streaming.viewer.launch import (
    environment_setting,
    free_ports,
    launch_log_path,
    runtime_directory,
    wait_until_answering,
)
from polystore.streaming.viewer.service import ViewerService

IMAGE_EXTENSIONS = frozenset({
    ".tif", ".tiff", ".ome.tif", ".ome.tiff", ".png", ".jpg", ".jpeg", ".bmp", ".npy", ".npz",
})
"""What every viewer shows as images (a viewer's SUPPORTED_EXTENSIONS add its own)."""
ROI_EXTENSIONS = frozenset(ROI_SET_SUFFIXES)

__all__ = [
    "CONTROL_PORT_OFFSET",
    "IMAGE_EXTENSIONS",
    "ROI_EXTENSIONS",
    "ControlServer",
    "Handler",
    "HandlerResult",
    "Reply",
    "ViewerService",
    "ViewerStreamingBackend",
    "array_from_reply",
    "array_reply",
    "environment_setting",
    "free_ports",
    "launch_log_path",
    "request",
    "runtime_directory",
    "wait_until_answering",
]
