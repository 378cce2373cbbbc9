"""Bundled YAML configs (installed as ``rsseg.configs``): one file per dataset x method."""
