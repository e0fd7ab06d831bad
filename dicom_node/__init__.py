"""A DICOM node for PACS: a C-STORE SCP that segments every fundus photo it receives and sends the SEG back."""
