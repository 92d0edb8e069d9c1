"""The retrieve stage's vector index: what gets indexed (`corpus`), its Qdrant store (`qdrant`)."""
