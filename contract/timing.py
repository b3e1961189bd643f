"""Latencies the hardware has and the analytic cycle model counts with.

The cycle model (:mod:`compiler.cycles`) states the sequencer's schedule in formulas built on
these; each gateware block declares its latency from here, and its tests measure it.
"""

__all__ = ["ACTBUF_LATENCY", "ARGMAX_SCAN", "CHECK_LATENCY", "DATAPATH_LATENCY", "MACRO_LATENCY"]

MACRO_LATENCY = 3
"""CIM macro: cycles from the clock edge that accepts a vector's last bit-plane to the edge
after which its result is valid (:class:`gateware.cim_macro.CIMMacro`)."""

DATAPATH_LATENCY = 6
"""Accumulate / requantize / residual datapath: cycles from the transfer of a result's last
beat to the result being valid (:class:`gateware.datapath.Datapath`)."""

ACTBUF_LATENCY = 2
"""Activation buffer's stream read path: cycles from a request to its word
(:class:`gateware.actbuf.ActivationBuffer`)."""

ARGMAX_SCAN = 1
"""Classifier: cycles its sequential argmax spends per logit after the first; a raw layer
ends ``ARGMAX_SCAN * (out_channels - 1)`` cycles after its result arrives
(:class:`gateware.sequencer.Classifier`)."""

CHECK_LATENCY = 4
"""Descriptor check: cycles from a descriptor's last word to its code (three stages of
products, one of the code), each stage one multiplier deep for the clock
(:func:`gateware.sequencer.fetcher.check`)."""
