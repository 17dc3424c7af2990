"""config. kdcli's resolvers are registered on import, so that any composition of its configs
(`kd`, the tests' Hydra compose API) can resolve them (kdcli/config/resolvers.py)."""

from kdcli.config import resolvers

resolvers.register()
