/* registry.c — placeholder until the module lands. */
