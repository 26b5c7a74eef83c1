"""Tracing text to the training steps that taught it (issue 26).

``index``: a suffix-array index of the trained stream in blocks of steps; ``spans``: the
maximal spans of a text that occur in it (OLMoTrace's definition) and their occurrences as
(instance, offset, step, slot); ``run``: the trace step behind ``trace.py``; ``page``: the
static HTML page.
"""
