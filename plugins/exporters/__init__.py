"""plugins/exporters"""
