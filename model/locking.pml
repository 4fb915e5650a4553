/*
 * Promela model of chunkyard's lock protocol (design: shared/design/locking.md).
 * How to run it, what it abstracts and its state counts: README.md.
 *
 * Four processes loop forever; round after round each picks one of the six
 * operations of the design's "Who takes what" table: backup, restore, namespace
 * create, namespace delete, namespace move, group move.  Locks are counters with
 * blocking acquisition (atomic { free -> take }), so a wrong acquisition order can
 * deadlock, which spin reports as an invalid end state.
 *
 * Namespaces are path slots numbered in the global lock order of rule 3 (the
 * component tuple order, an ancestor before its descendants):
 *     0 = root, 1 = a, 2 = a/b, 3 = c, 4 = c/b
 * A slot exists or not.  A namespace move renames a subtree (a -> c turns a/b into
 * c/b) and carries the groups along, so it changes which namespace a group lives
 * in; workers address a group by its path, as a client does.  Groups are
 * (namespace, id) with two ids; a group exists (with its snapshots) or not.
 *
 * Properties, asserted on both sides when a critical section is entered (the party
 * that enters second sees the first one's flag), one property per assert:
 *   (a) no process works inside namespace n while a structural operation (create,
 *       delete, move) on n or an ancestor of n is in its critical section, and two
 *       structural operations on overlapping subtrees never overlap;
 *       these asserts name only inside[] and restr[];
 *   (b) no process reads (restore) or writes (backup) a group's snapshots while the
 *       group is moved or deleted, and a reader's snapshot stays there until it is
 *       done; these asserts name only guse[], gmv[] and gex[];
 *   (c) a group has one writer at a time (GW); this assert names only gwr[].
 * Spin itself checks for invalid end states (deadlock).
 *
 * Seeded bugs, one at a time (spin -a -DBUG_...):
 *   BUG_GROUP_WITHOUT_NS  backup and restore lock the group without NS(n) S
 *                         (rule 1 broken)                          -> assertion (a)
 *   BUG_WRONG_ORDER       a group move takes GA X on its source first, then on its
 *                         target, instead of sorted (rule 3)   -> invalid end state
 *   BUG_LIST_BEFORE_LOCK  namespace delete and move list the children before they
 *                         hold the parent's X (rule 2)             -> assertion (a)
 *   BUG_BACKUP_WITHOUT_GW a backup takes no GW X                   -> assertion (c)
 *
 * PROBE_CS=<op> (1 backup, 2 restore, 3 create, 4 delete, 5 namespace move,
 * 6 group move) fails an assert naming op when that operation enters its critical
 * section: the check that the model is not vacuous.
 *
 * Granularity.  Taking a lock is a right mover and releasing one a left mover
 * (Lipton's reduction), so an operation is one atomic block (take the locks in
 * order, check existence, enter the critical section) and one d_step (take
 * effect, leave, release everything); a namespace move has its rename as a step
 * of its own in between.  In the atomic block each lock is a d_step whose first
 * statement waits for it: when it must wait, the process loses atomicity right
 * there, holding the locks taken so far, which is what a deadlock needs.  A free
 * lock is taken without a scheduling point, which loses no reachable lock state:
 * other processes' steps in between could run before it.  An existence check is
 * read in the step that takes the lock guarding it; once a namespace or group is
 * seen to exist under its lock, nothing can remove it before the lock goes.
 * Releasing all locks in one step equals releasing them in reverse order.
 */

/* namespace slots, in lock order */
#define ROOT 0
#define NA   1
#define NAB  2
#define NC   3
#define NCB  4
#define NNS  5
#define NONE 7                          /* "no key" in a structural plan */

#define PARENT(k) ((k) == NAB -> NA : ((k) == NCB -> NC : ROOT))
#define CHILD(k)  ((k) == NA -> NAB : ((k) == NC -> NCB : NONE))
#define ISCHILD(k, p) ((k) != ROOT && PARENT(k) == (p))

/* groups (n, id) and snapshots (n, id, time): index order = lock order */
#define NG   2
#define GK(n, g)     ((n) * NG + (g))
#define NT   3                          /* snapshot times: 0 the newest existing one, */
#define SK(n, g, t)  (GK(n, g) * NT + (t))  /* 1 and 2 new ones (see backup) */
#define NGK  (NNS * NG)
#define NSK  (NGK * NT)

#ifdef PROBE_CS
#define PROBE() assert(op != PROBE_CS)
#else
#define PROBE() skip
#endif

#define XL 15                           /* lock value meaning "held exclusive" */

/* ---- locks: 0 free, 1..4 shared holders, XL exclusive ---- */
byte nsl[NNS];                          /* NS(n)  S/X */
bit  gwl[NGK];                          /* GW(g)  X   */
byte gal[NGK];                          /* GA(g)  S/X */
byte snl[NSK];                          /* SN(s)  S/X */

/* ---- the datastore ---- */
bit  ns_exists[NNS];
bit  gex[NGK];                          /* the group directory (with its snapshots) exists */

/* ---- observers for the properties ---- */
byte inside[NNS];                       /* processes working inside namespace n */
bit  restr[NNS];                        /* a structural op on n is in its critical section */
byte guse[NGK];                         /* processes reading or writing the group's snapshots */
bit  gmv[NGK];                          /* the group is being moved */
bit  gwr[NGK];                          /* a backup is writing the group */

/* no structural operation on k or on its parent (root is never restructured,
 * the tree is three levels deep) */
#define UNRESTRUCTURED(k) (restr[k] == 0 && restr[PARENT(k)] == 0)

/* ---- lock primitives, used inside atomic blocks: wait, then take ---- */
#define NS_S(k) nsl[k] != XL -> nsl[k]++;     nss = nss | (1 << (k))
#define NS_X(k) nsl[k] == 0  -> nsl[k] = XL;  nsx = nsx | (1 << (k))
#define GW_X(k) gwl[k] == 0  -> gwl[k] = 1;   gws = gws | (1 << (k))
#define GA_S(k) gal[k] != XL -> gal[k]++;     gas = gas | (1 << (k))
#define GA_X(k) gal[k] == 0  -> gal[k] = XL;  gax = gax | (1 << (k))
#define SN_S(k) snl[k] != XL -> snl[k]++;     sns = sns | (1 << (k))
#define SN_X(k) snl[k] == 0  -> snl[k] = XL;  snx = snx | (1 << (k))

/* Release every lock the process holds and forget all locals (so that finished
 * rounds merge into one state).  Used inside an atomic block: releasing all at once
 * equals releasing in reverse order, since releases are left movers. */
inline release_all() {
  k = 0;
  do
  :: k < NNS ->
     if
     :: nss & (1 << k) -> nsl[k]--
     :: nsx & (1 << k) -> nsl[k] = 0
     :: else
     fi;
     k++
  :: else -> break
  od;
  k = 0;
  do
  :: k < NGK ->
     if
     :: gws & (1 << k) -> gwl[k] = 0
     :: else
     fi;
     if
     :: gas & (1 << k) -> gal[k]--
     :: gax & (1 << k) -> gal[k] = 0
     :: else
     fi;
     k++
  :: else -> break
  od;
  k = 0;
  do
  :: k < NSK ->
     if
     :: sns & (1 << k) -> snl[k]--
     :: snx & (1 << k) -> snl[k] = 0
     :: else
     fi;
     k++
  :: else -> break
  od;
  nss = 0; nsx = 0; gws = 0; gas = 0; gax = 0; sns = 0; snx = 0;
  op = 0; n = 0; m = 0; g = 0; k = 0; xn = 0; tx = 0; ps = 0; kids = 0; ok = 0
}

/* ------------------------------------------------------------------------- */
/* Structural namespace operations: one plan, walked in the global key order.
 *   create c:     S on ps = parent(c), X on tx = c
 *   delete n:     X on xn = n and on each child of n, top-down
 *   move n to t:  X on xn = n and on each child of n, S on ps = parent(t),
 *                 X on tx = t
 * A child of xn is listed (its existence read) only when the walk reaches it,
 * which is after NS(xn) X is held, since the children follow xn in the order.
 * The observers use the true subtree (the children that exist when the critical
 * section is entered), not the listed one. */

#ifdef BUG_LIST_BEFORE_LOCK
#define LISTED(k) (kids & (1 << (k)))   /* listed before NS(xn) X was taken */
#else
#define LISTED(k) ns_exists[k]
#endif
#define RELEVANT(k) ((k) == xn || (k) == tx || (k) == ps || (ISCHILD(k, xn) && LISTED(k)))

/* (a) and (b) for a namespace k that the structural operation changes */
inline assert_unused(k) {
  assert(inside[k] == 0 && UNRESTRUCTURED(k));                              /* (a) */
  assert(guse[GK(k, 0)] == 0 && guse[GK(k, 1)] == 0 &&
         gmv[GK(k, 0)] == 0 && gmv[GK(k, 1)] == 0)                          /* (b) */
}

inline skip_irrelevant() {
  do
  :: k < NNS && !RELEVANT(k) -> k++
  :: else -> break
  od;
  skip            /* the break's target, still inside the caller's d_step */
}

inline structural_enter(OP, XN, TX) {
  atomic {
    d_step {
      op = OP; xn = XN; tx = TX;
      ps = (TX == NONE -> NONE : PARENT(TX));
#ifdef BUG_LIST_BEFORE_LOCK
      if
      :: xn != NONE && CHILD(xn) != NONE && ns_exists[CHILD(xn)] -> kids = 1 << CHILD(xn)
      :: else
      fi;
#endif
      k = 0;
      skip_irrelevant()
    };
    do   /* wait for the next key, take it, find the one after */
    :: d_step { k < NNS && k == ps && nsl[k] != XL -> NS_S(k); k++; skip_irrelevant() }
    :: d_step { k < NNS && k != ps && nsl[k] == 0 -> NS_X(k); k++; skip_irrelevant() }
    :: k >= NNS -> break
    od;
    d_step {
      /* existence is checked only now, under the locks that guard it */
      if
      :: op == 3 -> ok = ns_exists[ps] && !ns_exists[tx]                   /* create */
      :: op == 4 -> ok = ns_exists[xn]                                     /* delete */
      :: op == 5 -> ok = ns_exists[xn] && ns_exists[ps] && !ns_exists[tx]  /* move   */
      fi;
      if
      :: ok ->   /* enter the critical section */
         PROBE();
         if
         :: xn != NONE ->
            assert_unused(xn);
            if
            :: CHILD(xn) != NONE && ns_exists[CHILD(xn)] -> assert_unused(CHILD(xn))
            :: else
            fi;
            restr[xn] = 1
         :: else
         fi;
         if
         :: tx != NONE -> assert_unused(tx); restr[tx] = 1
         :: else
         fi;
         if
         :: ps != NONE -> assert(UNRESTRUCTURED(ps)); inside[ps]++          /* (a) */
         :: else
         fi
      :: else
      fi
    }
  }
}

inline structural_rename() {
  d_step {   /* the one rename(2): xn's subtree and its groups become tx's */
    if
    :: ok ->
       ns_exists[tx] = 1; ns_exists[xn] = 0;
       gex[GK(tx, 0)] = gex[GK(xn, 0)]; gex[GK(xn, 0)] = 0;
       gex[GK(tx, 1)] = gex[GK(xn, 1)]; gex[GK(xn, 1)] = 0;
       if
       :: CHILD(xn) != NONE ->
          ns_exists[CHILD(tx)] = ns_exists[CHILD(xn)]; ns_exists[CHILD(xn)] = 0;
          gex[GK(CHILD(tx), 0)] = gex[GK(CHILD(xn), 0)]; gex[GK(CHILD(xn), 0)] = 0;
          gex[GK(CHILD(tx), 1)] = gex[GK(CHILD(xn), 1)]; gex[GK(CHILD(xn), 1)] = 0
       :: else
       fi;
       restr[tx] = 0   /* the target appears complete: the rename is its last change */
    :: else
    fi
  }
  /* the source side stays in its critical section (the mover unlinks the stale
     lock files of the old paths) until it leaves */
}

inline structural_leave() {
  d_step {   /* a create or delete takes effect; leave; release */
    if
    :: !ok
    :: ok && op == 3 -> ns_exists[tx] = 1; restr[tx] = 0; inside[ps]--
    :: ok && op == 4 ->
       ns_exists[xn] = 0; gex[GK(xn, 0)] = 0; gex[GK(xn, 1)] = 0;  /* rm -r: the */
       if                                                          /* true subtree */
       :: CHILD(xn) != NONE ->
          ns_exists[CHILD(xn)] = 0; gex[GK(CHILD(xn), 0)] = 0; gex[GK(CHILD(xn), 1)] = 0
       :: else
       fi;
       restr[xn] = 0
    :: ok && op == 5 -> restr[xn] = 0; inside[ps]--
    fi;
    release_all()
  }
}

/* ------------------------------------------------------------------------- */
/* backup into group (n, g): NS(n) S, GW X, GA S, SN(base) S, SN(new) X.
 * Two writers of one group would create snapshots with different times, so the
 * new snapshot's key differs per process (else SN X, not GW X, would keep two
 * writers apart).  No other operation of the model contends for a snapshot lock
 * of a group whose GW X and GA S are held (a restore takes S on the existing
 * snapshot, a group move needs GA X), so the SN locks never wait. */
#define NEW_TIME(p) (((p) < 2) -> 1 : 2)
inline backup(N, G) {
  atomic {
    d_step {
#ifndef BUG_GROUP_WITHOUT_NS
      NS_S(N);
#endif
      op = 1; n = N; g = G; ok = ns_exists[n]
    };
    if
    :: ok ->
#ifndef BUG_BACKUP_WITHOUT_GW
       d_step { GW_X(GK(n, g)) };
#endif
       d_step {
         GA_S(GK(n, g));
         /* a d_step must not block past its first statement: spin reports an
            error if one of these snapshot locks ever had to wait */
         if
         :: gex[GK(n, g)] -> SN_S(SK(n, g, 0))     /* base: the newest snapshot */
         :: else
         fi;
         SN_X(SK(n, g, NEW_TIME(me)));              /* the new snapshot */
         /* enter: all locks held */
         PROBE();
         assert(UNRESTRUCTURED(n));                                         /* (a) */
         assert(gmv[GK(n, g)] == 0);                                        /* (b) */
         assert(gwr[GK(n, g)] == 0);                                        /* (c) */
         inside[n]++; guse[GK(n, g)]++; gwr[GK(n, g)] = 1
       }
    :: else
    fi
  };
  d_step {   /* the group directory is created under GA S after GW X; leave */
    if
    :: ok -> gex[GK(n, g)] = 1; inside[n]--; guse[GK(n, g)]--; gwr[GK(n, g)] = 0
    :: else
    fi;
    release_all()
  }
}

/* restore a snapshot of group (n, g): NS S, GA S, SN(s) S */
inline restore(N, G) {
  atomic {
    d_step {
#ifndef BUG_GROUP_WITHOUT_NS
      NS_S(N);
#endif
      op = 2; n = N; g = G; ok = ns_exists[n]
    };
    if
    :: ok ->
       d_step {
         GA_S(GK(n, g));
         ok = gex[GK(n, g)];
         if
         :: ok ->
            SN_S(SK(n, g, 0));
            /* enter: read the snapshot */
            PROBE();
            assert(UNRESTRUCTURED(n));                                      /* (a) */
            assert(gmv[GK(n, g)] == 0);                                     /* (b) */
            inside[n]++; guse[GK(n, g)]++
         :: else
         fi
       }
    :: else
    fi
  };
  d_step {   /* leave */
    if
    :: ok ->
       assert(gex[GK(n, g)]);           /* (b): the snapshot stayed while read */
       inside[n]--; guse[GK(n, g)]--
    :: else
    fi;
    release_all()
  }
}

/* ------------------------------------------------------------------------- */
/* move group g from n to m: NS S on both, sorted; GA X on both, sorted; one
 * rename when g@m does not exist, else a merge */
#define LO(a, b) ((a) < (b) -> (a) : (b))
#define HI(a, b) ((a) < (b) -> (b) : (a))
#ifdef BUG_WRONG_ORDER
#define GA_FIRST(a, b)  (a)             /* the source first: against rule 3 */
#define GA_SECOND(a, b) (b)
#else
#define GA_FIRST(a, b)  LO(a, b)
#define GA_SECOND(a, b) HI(a, b)
#endif

inline group_move(N, M, G) {
  atomic {
    d_step { NS_S(LO(N, M)); op = 6; n = N; m = M; g = G };
    d_step { NS_S(HI(n, m)); ok = ns_exists[n] && ns_exists[m] };
    if
    :: ok ->
       d_step { GA_X(GK(GA_FIRST(n, m), g)) };
       d_step {
         GA_X(GK(GA_SECOND(n, m), g));
         /* whether the target group exists is looked at only under GA X on it */
         ok = gex[GK(n, g)];
         if
         :: ok ->   /* enter */
            PROBE();
            assert(UNRESTRUCTURED(n) && UNRESTRUCTURED(m));                 /* (a) */
            assert(guse[GK(n, g)] == 0 && guse[GK(m, g)] == 0 &&
                   gmv[GK(n, g)] == 0 && gmv[GK(m, g)] == 0);               /* (b) */
            inside[n]++; inside[m]++; gmv[GK(n, g)] = 1; gmv[GK(m, g)] = 1
         :: else
         fi
       }
    :: else
    fi
  };
  d_step {   /* the rename (or merge); leave */
    if
    :: ok ->
       gex[GK(m, g)] = 1; gex[GK(n, g)] = 0;
       inside[n]--; inside[m]--; gmv[GK(n, g)] = 0; gmv[GK(m, g)] = 0
    :: else
    fi;
    release_all()
  }
}

/* ------------------------------------------------------------------------- */
/* Each process mixes all six operations, on arguments of its own; together they
 * put every operation against every other on the same keys, from different
 * processes:
 *
 *   process  backup/restore  group move      create  delete  namespace move
 *   0        g1 @ a/b        g0 a/b -> c/b   a/b     c       c -> a
 *   1        g1 @ c/b        g0 c/b -> a/b   c/b     a       a -> c
 *   2        g1 @ a/b        g1 a/b -> c/b   c       c/b     c/b -> a/b
 *   3        g0 @ c/b        g1 c/b -> a/b   a       a/b     a/b -> c/b
 *
 * e.g. workers in a/b (0, 2) against delete a and move a -> c (1) and against
 * delete a/b and move a/b -> c/b (3); a worker in c/b (3) entering right after
 * a -> c (1) renamed a/b into c/b while the mover is still in its critical
 * section; two writers of one group (0, 2); opposite group moves of one group
 * (0 and 1 for g0, 2 and 3 for g1) with readers and writers of that group at
 * their ends (g0: 3 at c/b; g1: 0 and 2 at a/b, 1 at c/b); opposite namespace
 * moves (0 and 1, 2 and 3); create a/b (0) against delete and move of a, which
 * list a's children (1).  Arguments chosen nondeterministically in every round
 * instead multiply the state space by the choices per process (two groups for
 * backup and restore alone: 3.6 times the states). */
#define WORK_NS(p)   (((p) == 0 || (p) == 2) -> NAB : NCB)
#define WORK_G(p)    ((p) == 3 -> 0 : 1)
#define GMOVE_G(p)   (((p) < 2) -> 0 : 1)
#define GMOVE_SRC(p) (((p) == 0 || (p) == 2) -> NAB : NCB)
#define GMOVE_DST(p) (((p) == 0 || (p) == 2) -> NCB : NAB)
#define CREATE_NS(p) ((p) == 0 -> NAB : ((p) == 1 -> NCB : ((p) == 2 -> NC : NA)))
#define DELETE_NS(p) ((p) == 0 -> NC : ((p) == 1 -> NA : ((p) == 2 -> NCB : NAB)))
#define MOVE_SRC(p)  ((p) == 0 -> NC : ((p) == 1 -> NA : ((p) == 2 -> NCB : NAB)))
#define MOVE_DST(p)  ((p) == 0 -> NA : ((p) == 1 -> NC : ((p) == 2 -> NAB : NCB)))

proctype P(byte me)
{
  byte op, n, m, g, k, xn, tx, ps, kids;
  unsigned nss : 5, nsx : 5;                       /* held locks: bit k of NS(k), */
  unsigned gws : 10, gas : 10, gax : 10;           /* of GW, GA (NGK keys) */
  unsigned sns : 30, snx : 30;                     /* and of SN (NSK keys) */
  bit ok;

end:
  do
  :: backup(WORK_NS(me), WORK_G(me))
  :: restore(WORK_NS(me), WORK_G(me))
  :: structural_enter(3, NONE, CREATE_NS(me)); structural_leave()
  :: structural_enter(4, DELETE_NS(me), NONE); structural_leave()
  :: structural_enter(5, MOVE_SRC(me), MOVE_DST(me)); structural_rename(); structural_leave()
  :: group_move(GMOVE_SRC(me), GMOVE_DST(me), GMOVE_G(me))
  od
}

init {
  atomic {
    ns_exists[ROOT] = 1; ns_exists[NA] = 1; ns_exists[NAB] = 1;
    gex[GK(NAB, 0)] = 1;                /* a/b holds both groups */
    gex[GK(NAB, 1)] = 1;
    run P(0); run P(1); run P(2); run P(3)
  }
}
