"""Provision Microsoft Entra ID app registrations for DICOM services.

The public surface is the blueprint in ``registrations.http``; everything else is imported lazily.
"""
