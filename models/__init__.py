"""Model code: what a churnlens model is, how it explains itself, how it is stored and loaded."""

#: the model every command and the server use unless told otherwise: the registry's champion
DEFAULT_MODEL_URI = "models:/churnlens@champion"
