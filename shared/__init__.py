"""What every trigger uses the same way, in layers; a module imports only from layers below its own
(and from its own package), and only through a package's public surface (`__all__` of its
`__init__`; modules whose names start with `_` are private to their package).

    http        the one request pipeline: request id, settings, token, throttle, inputs,
      |         deadline, errors to ApiError, JSON, logs and telemetry; pages of items
      v
    auth        Entra ID tokens: key and metadata caches, the token rules, the principal
      |   documents   insight documents: the model, its validation, its files (JSONL, CSV)
      |     |
      |     v
      |   storage     the insights table behind one door: reads, the write path, the expiry
      |     |         index, deletes, the name index, the migration; its own error tree
      v     v
    settings    the typed app settings, built on first use
      |
      v
    contract    the wire: response models, ApiError and its error tree, request parameters,
      |         the email model, language negotiation, spellings, instants, extension points
      v
    runtime     the running request: its deadline, its log context, per-event-loop clients

`auth` does not import `storage` or `documents`, nor they it. `tests/test_layers.py` holds the
rules over the whole tree.
"""
