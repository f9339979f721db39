package journal

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"github.com/ctguard/ctguard/policy"
)

// Since version 2 the journal names each revision's policies by the
// SHA-256 of their JSON, stored once in a file of their own
// (policies-HEX.json): a 200,000-CIDR policy is several MB of JSON, and
// revisions applying the same policies, or re-read every resync, cost
// nothing more. Policy files are written (temp file, fsync, rename, fsync
// of the directory) before the journal that names them, are checked
// against their name when read, and are removed once no journal names
// them.

// Names of the policy files.
const (
	policyFilePrefix = "policies-"
	policyFileSuffix = ".json"
	// refPrefix starts a reference in journal.json.
	refPrefix = "sha256:"
)

// maxCachedPolicies bounds the policy sets a Store keeps decoded: the
// newest revisions' and the pending one's are what is read again.
const maxCachedPolicies = MaxRevisions + 1

// diskJournal is journal.json as written since version 2, and as version
// 1 wrote it (policies inline).
type diskJournal struct {
	Journal
	Revisions []diskRevision `json:"revisions,omitempty"`
	Pending   *diskRevision  `json:"pending,omitempty"`
}

// diskRevision is a Revision on disk: its policies inline (version 1) or
// by reference (PoliciesRef, version 2).
type diskRevision struct {
	Revision
	Policies    []policy.Policy `json:"policies,omitempty"`
	PoliciesRef string          `json:"policiesRef,omitempty"`
}

// policiesJSON encodes policies as the policy files store them, and names
// the encoding.
func policiesJSON(ps []policy.Policy) (ref string, b []byte, err error) {
	if b, err = json.Marshal(ps); err != nil {
		return "", nil, err
	}
	b = append(b, '\n')
	sum := sha256.Sum256(b)
	return refPrefix + hex.EncodeToString(sum[:]), b, nil
}

// PoliciesRef returns the reference under which the journal stores ps:
// equal policies (as the journal stores them, without Policy.Source) have
// equal references.
func PoliciesRef(ps []policy.Policy) (string, error) {
	ref, _, err := policiesJSON(ps)
	return ref, err
}

// PoliciesRef is the package's PoliciesRef, without encoding again
// policies this Store loaded or saved (or named before).
func (s *Store) PoliciesRef(ps []policy.Policy) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ref, ok := s.cache.refOf[idOf(ps)]; ok && len(ps) > 0 {
		return ref, nil
	}
	ref, b, err := policiesJSON(ps)
	if err == nil && len(ps) > 0 {
		s.cache.remember(ref, nil)
		s.cache.refOf[idOf(ps)] = ref
		s.cache.lastRef, s.cache.lastJSON = ref, b // what Save writes next, likely
	}
	return ref, err
}

// policyFile is the file name of a reference.
func policyFile(ref string) (string, error) {
	h, ok := strings.CutPrefix(ref, refPrefix)
	if _, err := hex.DecodeString(h); !ok || err != nil || len(h) != 2*sha256.Size {
		return "", fmt.Errorf("policy reference %.80q is not %sHEX", ref, refPrefix)
	}
	return policyFilePrefix + h + policyFileSuffix, nil
}

// sliceID identifies a policy slice the Store handed out or saved, so its
// reference is not computed again (journals never modify policies).
type sliceID struct {
	first *policy.Policy
	n     int
}

func idOf(ps []policy.Policy) sliceID { return sliceID{unsafe.SliceData(ps), len(ps)} }

// policyCache remembers decoded policy files and the references of
// policy slices, for the references the last journal named.
type policyCache struct {
	byRef map[string][]policy.Policy
	refOf map[sliceID]string
	// lastRef and lastJSON are the last policies PoliciesRef encoded.
	lastRef  string
	lastJSON []byte
}

// keep drops what the references refs do not name.
func (pc *policyCache) keep(refs map[string]bool) {
	for ref := range pc.byRef {
		if !refs[ref] {
			delete(pc.byRef, ref)
		}
	}
	for id, ref := range pc.refOf {
		if !refs[ref] {
			delete(pc.refOf, id)
		}
	}
}

// remember records ps under ref.
func (pc *policyCache) remember(ref string, ps []policy.Policy) {
	if pc.byRef == nil {
		pc.byRef, pc.refOf = map[string][]policy.Policy{}, map[sliceID]string{}
	}
	if len(pc.byRef) >= 4*maxCachedPolicies {
		clear(pc.byRef)
		clear(pc.refOf)
	}
	if ps == nil {
		return
	}
	pc.byRef[ref] = ps
	if len(ps) > 0 {
		pc.refOf[idOf(ps)] = ref
	}
}

// savePolicies writes the policy file of ps unless it exists, and returns
// its reference.
func (s *Store) savePolicies(ps []policy.Policy) (string, error) {
	if ref, ok := s.cache.refOf[idOf(ps)]; ok && len(ps) > 0 {
		if name, err := policyFile(ref); err == nil {
			if _, err := os.Lstat(filepath.Join(s.dir, name)); err == nil {
				return ref, nil
			}
		}
	}
	ref, b, err := s.cache.lastRef, s.cache.lastJSON, error(nil)
	if ref == "" || s.cache.refOf[idOf(ps)] != ref || len(ps) == 0 {
		if ref, b, err = policiesJSON(ps); err != nil {
			return "", err
		}
	}
	s.cache.lastRef, s.cache.lastJSON = "", nil
	name, err := policyFile(ref)
	if err != nil {
		return "", err
	}
	if _, err := os.Lstat(filepath.Join(s.dir, name)); errors.Is(err, fs.ErrNotExist) {
		if err := s.replace(name, b); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	// Load gives the policies as the file holds them: without
	// Policy.Source, which the journal does not store.
	stored := slices.Clone(ps)
	for i := range stored {
		stored[i] = stored[i].WithSource("")
	}
	s.cache.remember(ref, stored)
	if len(ps) > 0 {
		s.cache.refOf[idOf(ps)] = ref
	}
	return ref, nil
}

// loadPolicies returns the policies of ref, from the cache or its file,
// which must hold exactly what ref names.
func (s *Store) loadPolicies(ref string) ([]policy.Policy, error) {
	if ps, ok := s.cache.byRef[ref]; ok {
		return ps, nil
	}
	name, err := policyFile(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDamaged, err)
	}
	path := filepath.Join(s.dir, name)
	b, err := readTrusted(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s, named by the journal, is missing", ErrDamaged, path)
	}
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	if refPrefix+hex.EncodeToString(sum[:]) != ref {
		return nil, fmt.Errorf("%w: %s does not hold what its name says", ErrDamaged, path)
	}
	var ps []policy.Policy
	if err := json.Unmarshal(b, &ps); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrDamaged, path, err)
	}
	s.cache.remember(ref, ps)
	return ps, nil
}

// removeUnreferenced removes the policy files that neither refs nor an
// archived journal (of an earlier boot, kept for the record) name.
func (s *Store) removeUnreferenced(refs map[string]bool) error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	removed := false
	var archived map[string]bool
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, policyFilePrefix) || !strings.HasSuffix(name, policyFileSuffix) {
			continue
		}
		h := strings.TrimSuffix(strings.TrimPrefix(name, policyFilePrefix), policyFileSuffix)
		if refs[refPrefix+h] {
			continue
		}
		if archived == nil {
			archived = s.archivedRefs()
		}
		if archived[refPrefix+h] {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		removed = true
	}
	if removed {
		return s.syncDir()
	}
	return nil
}

// archivedRefs returns the policy references the archived journals name
// (best effort: an archive that does not read names none).
func (s *Store) archivedRefs() map[string]bool {
	refs := map[string]bool{}
	paths, err := s.Archives()
	if err != nil {
		return refs
	}
	for _, path := range paths {
		b, err := readTrusted(path)
		if err != nil {
			continue
		}
		var dj diskJournal
		if json.Unmarshal(b, &dj) != nil {
			continue
		}
		for _, r := range dj.Revisions {
			refs[r.PoliciesRef] = true
		}
		if dj.Pending != nil {
			refs[dj.Pending.PoliciesRef] = true
		}
	}
	return refs
}
