"""postback-hub: Adjust callbacks in, durably on Kafka, out to partners.

One import namespace, in layers that import one way only (an import-linter
contract in ``pyproject.toml`` holds the rule):

- ``postback_hub.service``: the receiver and the shared kernel (the canonical
  record, settings kernel, Kafka options, health, metrics, logs).
- ``postback_hub.consumers``: the consumer runtime as steps, and one package per
  destination type (module partners, X, the KPI rollup sink).
- this package's own modules (``cli``, ``supervisor``, ``config``) sit above both.

``service`` and ``consumers`` are top-level folders of the repository; the links
``postback_hub/service`` and ``postback_hub/consumers`` put them under this one
name for every tool alike (Python, mypy, pytest, the wheel build), without an
import hook.
"""
