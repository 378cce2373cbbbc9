"""rsseg's command line (installed as the ``rsseg.cli`` package): parsing only, logic lives in rsseg."""
