"""The DICOM services: an HTTPS front per DICOM service (the managed one of Azure Health Data Services and an
open-source Medical Imaging Server for DICOM) over one Orthanc process, checking tokens, data actions and CORS
the way those services do before it forwards DICOMweb (docs/local-tenant.md, "DICOM services")."""
