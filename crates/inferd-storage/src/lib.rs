//! inferd's model storage: storage URIs into a verified local cache.
