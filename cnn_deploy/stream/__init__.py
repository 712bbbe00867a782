"""Frames -> tiles -> batches -> any backend -> labels: the camera pipeline (``cnndeploy stream``).

``sources`` opens video files, image folders, V4L2 cameras, network streams and GStreamer
pipelines (OpenCV's ``VideoCapture``); ``tiling`` cuts frames into model-sized tiles in one
vectorised copy; ``classifier`` is the library API for embedding (:class:`TileClassifier`);
``pipeline`` runs a source through it with capture ahead in its own thread and per-stage timing;
``sinks`` write per-frame labels (JSONL) and annotated frames; ``synth`` makes test videos from
real MNIST digits.
"""
