"""plugins/data"""
