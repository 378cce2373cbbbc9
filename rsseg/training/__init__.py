"""rsseg.training"""
