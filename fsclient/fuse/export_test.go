package fuse

// FileHandles reports how many file handles s has open while it tracks
// them for passthrough (a test waits for the kernel's RELEASEs with it:
// a handle leaves once vfs has released it too).
func FileHandles(s *Server) int {
	s.fs.pt.mu.Lock()
	defer s.fs.pt.mu.Unlock()
	return len(s.fs.pt.fhs)
}
