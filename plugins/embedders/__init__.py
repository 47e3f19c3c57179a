"""plugins/embedders"""
