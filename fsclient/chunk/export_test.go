package chunk

// SetKDFCost lowers the argon2id costs NewKey records, so tests that make
// many keys stay fast; it returns a function restoring the defaults.
func SetKDFCost(time, memoryKiB uint32, threads uint8) (restore func()) {
	old := kdfParams
	kdfParams.time, kdfParams.memoryKiB, kdfParams.threads = time, memoryKiB, threads
	return func() { kdfParams = old }
}

// ReadaheadLimit is how far a sequential reader's window may grow now.
func (s *Store) ReadaheadLimit() int64 { return s.readaheadLimit() }
