"""Training of the DCMIF stages (JSRL → VGII → AFRI): data, losses, the loop and the stage definitions."""
