"""plugins/trainers"""
