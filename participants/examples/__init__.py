"""Runnable example participants for the shipped sagas (``sagas/*.yaml``).

Order checkout: :mod:`.inventory`, :mod:`.payments`, :mod:`.notifications`.
Profile-image upload: :mod:`.blobs`, :mod:`.profiles`, :mod:`.notifications`.
Run one with ``saga participant run participants.examples.inventory:app``.
"""
