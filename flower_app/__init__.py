"""The Flower App: this framework's federated fine-tuning on Flower's deployment engine.

``server_app`` (ServerApp) and ``client_app`` (ClientApp) are thin transport layers over the
framework's own parts: the round loop (``federated_learning.round_loop``), the aggregators, the
client training step (``federated_learning.client.train_client``), data loading and partitioning,
and the run flags (``config.py``). The repository root is the Flower App (its ``pyproject.toml``
holds ``[tool.flwr.app]``), so ``flwr run .`` ships all of that code to the SuperLink and every
SuperNode in the app bundle: nodes need only the Python environment, never a checkout.
"""
