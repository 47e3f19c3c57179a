"""core/allocator"""
