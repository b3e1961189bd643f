"""The contract between the network side and the hardware, imported by both, importing neither.

* :mod:`contract.config`: the named hardware configurations (:class:`HwConfig`).
* :mod:`contract.program`: the program format: descriptors, parameter records, weight
  packing, activation-buffer layout.
* :mod:`contract.arith`: the integer arithmetic: field widths, value ranges, the
  requantization and datapath rules, the partial-sum ADC rule.
* :mod:`contract.timing`: the blocks' latencies the cycle model counts with.

``contract/README.md`` states the integer contract in full. ``pyproject.toml``'s
import-linter contracts keep this package free of imports from ``model``, ``gateware``,
``compiler``, ``hw``, ``sim`` and ``tests`` (``make lint``).
"""
