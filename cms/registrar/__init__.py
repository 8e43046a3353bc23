"""The registrar: digest-authenticated REGISTER handling and the binding table."""
