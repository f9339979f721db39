package plan

import (
	"encoding/json"
	"io"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/policy"
)

// JSONFormatVersion is the "formatVersion" WriteJSON writes. It changes only
// when a field is removed or changes meaning; new fields may appear.
const JSONFormatVersion = 1

// WriteJSON renders the plan as one indented JSON object. Lists are always
// present (possibly empty) and sorted as in Plan; fields marked optional
// are left out when they do not apply. Actions are "create", "update",
// "replace", "delete" and, for perFlow policies, "none".
//
//	{
//	  "formatVersion": 1,
//	  "empty": false,                      // Plan.Empty
//	  "summary": {"add": 1, "change": 2, "remove": 0},
//	  "table": null | {                    // null: no change to the table
//	    "family": "inet", "name": "ctguard",
//	    "action": "create" | "update" | "delete",
//	    "counters": [{"name": "...", "action": "..."}],
//	    "sets": [{"name": "...", "action": "...",
//	              "type": "ipv4_addr", "interval": true,   // desired (observed on delete)
//	              "oldType": "...", "oldInterval": false,  // optional: replace only
//	              "elementsAdded": ["..."], "elementsRemoved": ["..."]}],
//	    "chains": [{"name": "input", "hook": "input", "action": "...",
//	                "priority": -10,                       // desired (observed on delete)
//	                "oldPriority": 0,                      // optional: when it changes
//	                "reordered": false,
//	                "rules": [{"id": "<comment>", "action": "...",
//	                           "nft": "<rule in nft syntax>",  // desired (observed on delete)
//	                           "oldNft": "..."}]}],            // optional: update only
//	    "foreign": ["chain mine (...)"]},  // optional: objects ctguard never creates, removed
//	  "sysctls": [{"name": "net.netfilter.nf_conntrack_tcp_be_liberal",
//	               "old": "0" | null,                      // null: absent
//	               "new": "1"}],
//	  "perFlow": [{"name": "...", "action": "...",
//	               "directions": ["reply"], "existingFlows": true,           // desired (observed on delete)
//	               "handshake": "gate", "nat": ["snat"],
//	               "oldDirections": [...], "oldExistingFlows": false,        // optional: update only
//	               "matchingFlows": 12,                    // unflagged matching flows (desired side; 0 on delete)
//	               "flowsToFlag": 12,                      // PerFlowChange.FlowsToFlag
//	               "sample": ["..."]}],
//	  "staleFlags": {"flows": 3, "sample": ["..."]}  // optional: flows whose ctguard flag no policy wants
//	}
func WriteJSON(w io.Writer, p Plan) error {
	s := p.Summary()
	doc := jsonPlan{
		FormatVersion: JSONFormatVersion,
		Empty:         s == Summary{},
		Summary:       jsonSummary{Add: s.Add, Change: s.Change, Remove: s.Remove},
		Sysctls:       []jsonSysctl{},
		PerFlow:       []jsonPerFlow{},
	}
	if p.Table != nil {
		doc.Table = toJSONTable(*p.Table)
	}
	for _, c := range p.Sysctls {
		doc.Sysctls = append(doc.Sysctls, jsonSysctl{Name: c.Name, Old: c.Old, New: c.New})
	}
	for _, c := range p.PerFlow {
		doc.PerFlow = append(doc.PerFlow, toJSONPerFlow(c))
	}
	if st := p.StaleFlags; st != nil {
		doc.StaleFlags = &jsonStale{Flows: st.Flows, Sample: nonNil(st.Sample)}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(doc)
}

type jsonPlan struct {
	FormatVersion int           `json:"formatVersion"`
	Empty         bool          `json:"empty"`
	Summary       jsonSummary   `json:"summary"`
	Table         *jsonTable    `json:"table"`
	Sysctls       []jsonSysctl  `json:"sysctls"`
	PerFlow       []jsonPerFlow `json:"perFlow"`
	StaleFlags    *jsonStale    `json:"staleFlags,omitempty"`
}

type jsonStale struct {
	Flows  int      `json:"flows"`
	Sample []string `json:"sample"`
}

type jsonSummary struct {
	Add    int `json:"add"`
	Change int `json:"change"`
	Remove int `json:"remove"`
}

type jsonTable struct {
	Family   string        `json:"family"`
	Name     string        `json:"name"`
	Action   Action        `json:"action"`
	Counters []jsonCounter `json:"counters"`
	Sets     []jsonSet     `json:"sets"`
	Chains   []jsonChain   `json:"chains"`
	Foreign  []string      `json:"foreign,omitempty"`
}

type jsonCounter struct {
	Name   string `json:"name"`
	Action Action `json:"action"`
}

type jsonSet struct {
	Name            string           `json:"name"`
	Action          Action           `json:"action"`
	Type            ruleset.SetType  `json:"type"`
	Interval        bool             `json:"interval"`
	OldType         *ruleset.SetType `json:"oldType,omitempty"`
	OldInterval     *bool            `json:"oldInterval,omitempty"`
	ElementsAdded   []string         `json:"elementsAdded"`
	ElementsRemoved []string         `json:"elementsRemoved"`
}

type jsonChain struct {
	Name        string       `json:"name"`
	Hook        ruleset.Hook `json:"hook"`
	Action      Action       `json:"action"`
	Priority    int          `json:"priority"`
	OldPriority *int         `json:"oldPriority,omitempty"`
	Reordered   bool         `json:"reordered"`
	Rules       []jsonRule   `json:"rules"`
}

type jsonRule struct {
	ID     string  `json:"id"`
	Action Action  `json:"action"`
	NFT    string  `json:"nft"`
	OldNFT *string `json:"oldNft,omitempty"`
}

type jsonSysctl struct {
	Name string  `json:"name"`
	Old  *string `json:"old"`
	New  string  `json:"new"`
}

type jsonPerFlow struct {
	Name             string             `json:"name"`
	Action           Action             `json:"action"`
	Directions       []policy.Direction `json:"directions"`
	ExistingFlows    bool               `json:"existingFlows"`
	Handshake        policy.Handshake   `json:"handshake,omitempty"`
	NAT              []policy.NATKind   `json:"nat,omitempty"`
	OldDirections    []policy.Direction `json:"oldDirections,omitempty"`
	OldExistingFlows *bool              `json:"oldExistingFlows,omitempty"`
	MatchingFlows    int                `json:"matchingFlows"`
	FlowsToFlag      int                `json:"flowsToFlag"`
	Sample           []string           `json:"sample"`
}

func toJSONTable(t TableChange) *jsonTable {
	jt := &jsonTable{
		Family:   ruleset.TableFamily,
		Name:     ruleset.TableName,
		Action:   t.Action,
		Counters: []jsonCounter{},
		Sets:     []jsonSet{},
		Chains:   []jsonChain{},
	}
	for _, c := range t.Counters {
		jt.Counters = append(jt.Counters, jsonCounter{Name: c.Name, Action: c.Action})
	}
	jt.Foreign = t.Foreign
	for _, c := range t.Sets {
		s := jsonSet{
			Name:            c.Name,
			Action:          c.Action,
			ElementsAdded:   nonNil(c.ElementsAdded),
			ElementsRemoved: nonNil(c.ElementsRemoved),
		}
		cur := either(c.Desired, c.Observed)
		s.Type, s.Interval = cur.Type, cur.Interval
		if c.Action == ActionReplace {
			s.OldType, s.OldInterval = &c.Observed.Type, &c.Observed.Interval
		}
		jt.Sets = append(jt.Sets, s)
	}
	for _, c := range t.Chains {
		cur := either(c.Desired, c.Observed)
		jc := jsonChain{
			Name:      c.Name,
			Hook:      cur.Hook,
			Action:    c.Action,
			Priority:  cur.Priority,
			Reordered: c.Reordered,
			Rules:     []jsonRule{},
		}
		if c.PriorityChanged() {
			jc.OldPriority = &c.Observed.Priority
		}
		for _, r := range c.Rules {
			jr := jsonRule{ID: r.ID, Action: r.Action, NFT: either(r.Desired, r.Observed).String()}
			if r.Action == ActionUpdate {
				old := r.Observed.String()
				jr.OldNFT = &old
			}
			jc.Rules = append(jc.Rules, jr)
		}
		jt.Chains = append(jt.Chains, jc)
	}
	return jt
}

func toJSONPerFlow(c PerFlowChange) jsonPerFlow {
	cur := either(c.Desired, c.Observed)
	j := jsonPerFlow{
		Name:          c.Name,
		Action:        c.Action,
		Directions:    nonNil(cur.Directions),
		ExistingFlows: cur.ExistingFlows,
		Handshake:     cur.Handshake,
		NAT:           cur.NAT,
		FlowsToFlag:   c.FlowsToFlag(),
		Sample:        []string{},
	}
	if c.Desired != nil {
		j.MatchingFlows = c.Desired.MatchingFlows
		j.Sample = nonNil(c.Desired.Sample)
	}
	if c.Action == ActionUpdate {
		j.OldDirections = nonNil(c.Observed.Directions)
		j.OldExistingFlows = &c.Observed.ExistingFlows
	}
	return j
}

// either returns desired, or observed when desired is absent.
func either[T any](desired, observed *T) *T {
	if desired != nil {
		return desired
	}
	return observed
}

// nonNil makes a nil slice encode as [] rather than null.
func nonNil[T any](xs []T) []T {
	if xs == nil {
		return []T{}
	}
	return xs
}
