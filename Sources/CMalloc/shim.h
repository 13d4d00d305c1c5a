// glibc allocator tuning (mallopt); see PandoTransport/AllocatorPolicy.swift.
#include <malloc.h>
