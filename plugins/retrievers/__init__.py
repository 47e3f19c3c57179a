"""plugins/retrievers"""
