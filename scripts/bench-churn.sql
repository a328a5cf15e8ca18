-- One night of work in the agency database of scripts/bench: a few percent of rows updated,
-- inserted and deleted, new attachments. psql variables: scale, night.

SELECT setseed(0.1 * :night) AS seed \gset
SELECT greatest(1, (700000 * :scale * 0.012)::int) AS new_citizens,
       greatest(1, (50000 * :scale * 0.02)::int) AS new_documents,
       greatest(1, (4000 * :scale * 0.03)::int) AS new_attachments,
       (SELECT max(id) FROM documents) AS max_document \gset

-- Citizens: 2% move or get a new phone, 0.5% die or move out of the province, 1.2% are new.
UPDATE citizens SET address = bench_address(floor(random() * 13)::int, floor(random() * 20)::int),
                    updated_at = timestamptz '2026-11-27 17:00:00+07' + :night * interval '1 day'
WHERE random() < 0.015;
UPDATE citizens SET phone = '09' || lpad(floor(random() * 100000000)::int::text, 8, '0'),
                    updated_at = timestamptz '2026-11-27 17:00:00+07' + :night * interval '1 day'
WHERE random() < 0.005;
DELETE FROM citizens WHERE random() < 0.005;
INSERT INTO citizens (full_name, gender, born, id_number, phone, ethnicity, district, commune, address, registered_at, updated_at)
SELECT bench_name(), gender, born,
       '051' || (CASE WHEN gender = 'Nam' THEN 2 ELSE 3 END) || to_char(born, 'YY') || lpad((g * 7 + :night)::text, 6, '0'),
       NULL, 'Kinh', (SELECT district[1 + d] FROM ref_lists), (SELECT commune[1 + c] FROM ref_lists),
       bench_address(d, c),
       timestamptz '2026-11-27 09:00:00+07' + :night * interval '1 day',
       timestamptz '2026-11-27 09:00:00+07' + :night * interval '1 day'
FROM (
    SELECT g, CASE WHEN random() < 0.5 THEN 'Nam' ELSE 'Nữ' END AS gender,
           date '2026-01-01' + floor(random() * 320)::int AS born,
           floor(random() * 13)::int AS d, floor(random() * 20)::int AS c
    FROM generate_series(1, :new_citizens) AS g
) AS n;

-- Documents: 3% change status, 0.5% get a revised body, 0.3% drafts deleted, 2% new.
UPDATE documents SET status = 'đã lưu trữ', updated_at = timestamptz '2026-11-27 16:00:00+07' + :night * interval '1 day'
WHERE random() < 0.03;
UPDATE documents SET body = body || E'\n\n' || bench_fill('Sửa đổi theo ý kiến góp ý của Sở Tư pháp tại Công văn số %s ngày %s.'),
                     updated_at = timestamptz '2026-11-27 16:30:00+07' + :night * interval '1 day'
WHERE random() < 0.005;
DELETE FROM documents WHERE status = 'dự thảo' AND random() < 0.012;
INSERT INTO documents (doc_number, doc_type, issued_on, issuer, signer, citizen_id, subject, body, status, updated_at)
SELECT (1 + floor(random() * 3000))::int || '/CV-STP', 'Công văn', date '2026-11-27' + :night,
       'Sở Tư pháp', bench_name(), NULL, 'V/v sao lưu và khôi phục dữ liệu',
       bench_body(3 + floor(random() * 5)::int + 0 * g), 'đã ký',
       timestamptz '2026-11-27 10:00:00+07' + :night * interval '1 day'
FROM generate_series(1, :new_documents) AS g;

-- Attachments: 1% removed, 3% new (scans of the new documents).
DELETE FROM attachments WHERE random() < 0.01;
INSERT INTO attachments (document_id, file_name, mime_type, created_at, content)
SELECT :max_document + 1 + floor(random() * :new_documents)::bigint,
       'scan-n' || :night || '-' || g || '.pdf', 'application/pdf',
       timestamptz '2026-11-27 11:00:00+07' + :night * interval '1 day',
       bench_content((4 + floor(random() * random() * 90))::int + 0 * g)
FROM generate_series(1, :new_attachments) AS g;
UPDATE attachments SET sha256 = encode(digest(content, 'sha256'), 'hex') WHERE sha256 IS NULL;

-- What autovacuum would have done during the day: freed space is reused by tomorrow's rows.
VACUUM ANALYZE;
