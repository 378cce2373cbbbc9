"""The Streamlit map viewer script (``streamlit_app.py``); a package so it can ship as ``rsseg.app``."""
